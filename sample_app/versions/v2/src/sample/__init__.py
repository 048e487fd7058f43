"""The sample application: a greeter, a counter and a chat (echo) server over TCP."""
