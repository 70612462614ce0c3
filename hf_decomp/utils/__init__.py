"""Plumbing every layer may use: errors, paths, safe file writes, argument checks, markdown."""
