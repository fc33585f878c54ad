"""Offsite backup to S3 with Object Lock (issue 6).

``manifest``: the signed list of every object of a backup with its SHA-256, size, S3 version id and
retain-until date. ``pinned``: a read-only backend that serves exactly the versions a manifest names, so
verify and restore never read what an attacker put on top. ``remotes``: remote settings and incidents in
the client state folder. ``engine``: push, verify and restore. The service layer composes these.
"""
