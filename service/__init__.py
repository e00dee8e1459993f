"""Anjeon: travel-risk advisories for citizens abroad."""
