"""Tests of the agent SDK and the demo agents."""
