"""SQL state that lives outside the repository: engine, tables and alembic migrations.

The only room that imports sqlalchemy and alembic. Callers pass an explicit URL (settings decide it).
"""
