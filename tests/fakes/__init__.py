"""Small stand-ins for third-party services, served for real on 127.0.0.1."""
