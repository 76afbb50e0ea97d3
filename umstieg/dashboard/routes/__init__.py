"""The dashboard's pages and actions, one router per page family; create_app includes them all."""

from umstieg.dashboard.routes import departments, documents, exports, logins, queue, reruns

__all__ = ["ROUTERS"]

#: Every router, in the order create_app includes them.
ROUTERS = (logins.router, departments.router, queue.router, documents.router, reruns.router, exports.router)
