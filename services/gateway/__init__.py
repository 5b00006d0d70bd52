"""The HTTP gateway: FastAPI app, one router per resource. Run it with
``uvicorn services.gateway.app:create_app --factory --port 8080``."""
