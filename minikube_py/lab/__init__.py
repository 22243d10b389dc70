"""Helpers for the Vagrant lab: turning the running machines into inventory and ssh config."""
