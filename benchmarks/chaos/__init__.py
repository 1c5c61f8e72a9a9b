"""The chaos harness: fault proxy, seeded schedule, runner, history checker (see __main__)."""
