"""Routers shared by the staff servers (`/admin` and `/support`): the same routes on both, the
granted permission decides."""
