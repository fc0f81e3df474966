"""Routers of the staff servers (support and admin): the same routers are mounted on both, and the
caller's granted permissions decide what each may do."""
