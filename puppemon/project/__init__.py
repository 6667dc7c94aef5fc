"""What the flows branch holds and means: the manifest, cron lines, trigger kinds, the snapshot that deploys it."""
