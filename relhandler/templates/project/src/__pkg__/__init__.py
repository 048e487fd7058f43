"""The {{pkg}} application."""
