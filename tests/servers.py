"""Real remote servers for tests: sshd and smart HTTP on 127.0.0.1 (filled in below)."""
