"""Who is using the web app, and the gateway client that acts for them.

Two ways in, chosen by the deployment, never by the visitor:

* an identity provider (Streamlit's OIDC login, an ``[auth]`` section in ``.streamlit/secrets.toml``) and
  ``DERMASYNTH_FRONTEND_SERVICE_KEY`` (a key with the ``delegate`` scope): the person signs in with the
  provider; the web app calls the gateway with its service key and names the person in every request, and
  the gateway's audit trail records them;
* otherwise each person enters their own API key once per browser session (it is checked at once and kept
  only in that session's state). Keys are issued per person (``dermasynth keys create --name "Dr A. Jones"
  --scope clinician``), so the gateway's records name who asked.

The gateway's address is ``DERMASYNTH_GATEWAY_URL``; no page can change it, and no widget has a key as its
default value (Streamlit sends widget defaults to every browser).
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

from dermasynth.config import Settings, get_settings
from dermasynth.gateway_client import GatewayClient, GatewayError

Role = Literal["clinician", "engineer"]
KEY_STATE = "dermasynth_key"
ROLE_STATE = "dermasynth_roles"


def settings() -> Settings:
    return get_settings()


def identity_provider_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` configures Streamlit's OIDC login."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises its own FileNotFoundError subclass
        return False


def _logged_in() -> bool:
    """Whether the identity provider has signed this session's person in."""
    return bool(st.user.get("is_logged_in", False))


def _client(key: str, on_behalf_of: str | None = None) -> GatewayClient:
    return GatewayClient(settings().gateway_url, key, on_behalf_of=on_behalf_of)


def _check(client: GatewayClient, role: Role) -> None:
    if role == "clinician":
        client.check_clinician_key()
    else:
        client.models()


def explain_refusal(exc: GatewayError) -> str:
    """A refusal in words a person can act on."""
    if exc.status == 0:
        return (
            "The DermaSynth service cannot be reached; try again in a minute or tell your administrator. "
            f"({exc.detail})"
        )
    if exc.status == 401:
        return "This key is not valid (mistyped, revoked or expired). Ask your administrator for a new one."
    if exc.status == 403:
        return f"This key is not allowed here. {exc.detail}"
    return f"The service refused the request ({exc.reason or exc.status}): {exc.detail}"


def sign_out() -> None:
    for name in (KEY_STATE, ROLE_STATE):
        st.session_state.pop(name, None)
    if identity_provider_configured() and _logged_in():
        st.logout()


def signed_in(role: Role) -> GatewayClient | None:
    """The client acting for the signed-in person, or ``None`` after showing the sign-in form."""
    config = settings()
    if identity_provider_configured() and config.frontend_service_key is not None:
        if not _logged_in():
            st.info("Sign in with your organisation's account to continue.")
            st.button("Sign in", on_click=st.login, type="primary")
            return None
        person = str(st.user.get("email") or st.user.get("name") or "")
        return _client(config.frontend_service_key.get_secret_value(), on_behalf_of=person)
    key = st.session_state.get(KEY_STATE)
    if key and role in st.session_state.get(ROLE_STATE, set()):
        return _client(str(key))
    label = "your personal API key" if role == "clinician" else "your engineer API key"
    with st.form(f"sign-in-{role}"):
        st.markdown(f"**Sign in** with {label} (you are asked once per session).")
        typed = st.text_input("API key", type="password", key=f"sign_in_{role}", autocomplete="off")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return None
    if not typed.strip():
        st.error("Enter the API key your administrator gave you.")
        return None
    client = _client(typed.strip())
    try:
        _check(client, role)
    except GatewayError as exc:
        client.close()
        st.error(explain_refusal(exc))
        return None
    same_key = st.session_state.get(KEY_STATE) == typed.strip()
    st.session_state[ROLE_STATE] = {*(st.session_state.get(ROLE_STATE, set()) if same_key else set()), role}
    st.session_state[KEY_STATE] = typed.strip()
    client.close()
    st.rerun()  # the whole app again, signed in (the sidebar says so, the form goes)


def sidebar_account() -> None:
    """Where the person is signed in, and a way out."""
    with st.sidebar:
        if identity_provider_configured() and _logged_in():
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name')}")
            st.button("Sign out", on_click=sign_out)
        elif st.session_state.get(KEY_STATE):
            st.caption("Signed in with your API key")
            st.button("Sign out", on_click=sign_out)
