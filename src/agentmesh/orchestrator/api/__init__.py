"""The orchestrator's gRPC face: servicers, interceptors, request validation; translation only."""
