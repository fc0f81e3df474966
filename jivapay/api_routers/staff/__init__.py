"""Routers mounted on both staff servers (`/admin`, `/support`): the grant decides who may call them."""
