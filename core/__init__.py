"""Plumbing every app uses: database sessions, request ids, the API's error shape, metrics.

Imports no app of the project (an import-linter contract keeps it so).
"""
