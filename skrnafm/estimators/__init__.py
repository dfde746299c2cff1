"""Placeholder until this subpackage lands."""

__all__ = []
