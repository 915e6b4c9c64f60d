"""The service's HTTP routes, one :class:`fastapi.APIRouter` per concern;
:func:`~duanka.serving.api.create_app` includes them in this order: scoring, state (labels,
watchlist), admin, operations."""
