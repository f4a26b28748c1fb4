"""Live agents: the registry (directory), matching, circuit breakers and the Session link."""
