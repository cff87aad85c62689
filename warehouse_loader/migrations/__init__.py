"""Versioned warehouse migrations, ``NNN_name.sql``, applied in order by :mod:`warehouse_loader.migrate`."""
