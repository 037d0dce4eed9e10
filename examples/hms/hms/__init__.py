"""hms: a small hospital management app whose SQLAlchemy models drive schemashift."""
