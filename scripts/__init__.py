"""What runs beside the service, never in it: the demo, and the seeding the demo and the
benchmarks share."""
