"""Streamlit frontend for clinicians: upload lesion images, see the gateway's predictions. It talks only to
the gateway (through :mod:`services.frontend.gateway`) and shares nothing else but ``dermasynth.serving.schemas``."""
