"""The work of the service: the Strava client, sync, discovery, enrichment, webhooks, the
rate budget and its pure policy, and the rest; nothing here imports Flask."""
