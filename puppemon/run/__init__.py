"""Running one flow: the spec and result, the runner, and the backends runs execute on."""
