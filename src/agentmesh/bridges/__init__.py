"""Bridges: agents that offer another system's work as mesh capabilities.

Each is an ordinary mesh agent built on the SDK (:mod:`agentmesh.agent.routed`), so the
orchestrator needs nothing new to use them.
"""
