"""All SQL of CommHub: one named function per query, grouped by area. Nothing else writes SQL.

Functions take the `Database` first and return plain row dicts (column name -> value).
Writes must be called inside `db.write()`.
"""
