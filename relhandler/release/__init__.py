"""See relhandler/__init__.py for the layering."""
