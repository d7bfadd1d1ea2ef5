"""Pure domain logic: parsing, validation, rules. Never imports bytewax, never opens a socket."""
