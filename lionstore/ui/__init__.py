"""``lionstore ui``: a local, read-only web viewer of a lionstore database.

The server (:mod:`lionstore.ui.server`, Starlette and uvicorn from the ``ui``
extra) serves the pages in ``static/`` and a JSON API over the library functions
the CLI uses (:mod:`lionstore.ui.api`). Every script and style ships in the
package, with its licence: nothing is fetched at run time.
"""
