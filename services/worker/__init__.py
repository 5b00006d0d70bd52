"""Job workers: ``celery -A services.worker.celery_app worker -Q gan,train,default --pool=solo``."""
