"""The tamper-evident audit log: events (canonical JSON leaves), the log (append, checkpoints, verify,
proofs, segments in the repository) and custody (forensic queries). See docs/audit.md."""
