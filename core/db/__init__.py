"""Database sessions: set-up on connect, the dirty-session guard, error classification, the middleware."""
