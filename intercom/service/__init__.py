"""Configuration and systemd integration: everything between the operating system and the intercom's adapters."""
