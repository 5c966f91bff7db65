"""Authorization: the compiled policy routes and rules, evaluated per request, with an explain trace."""
