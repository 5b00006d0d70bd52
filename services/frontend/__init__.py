"""Streamlit frontend for clinicians: upload lesion images, see the gateway's predictions.

It talks only to the gateway, through the library's one gateway client (:mod:`dermasynth.gateway_client`),
and shares nothing else with the platform but the library's schemas; its image installs the ``frontend``
extra (no torch).
"""
