"""`kdsam serve`: segmentation over HTTP (FastAPI + uvicorn) and an interactive page in the browser."""
