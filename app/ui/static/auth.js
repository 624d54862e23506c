/* The API token: asked for when the service answers 401, kept in this tab's session storage. */

import { $ } from "./dom.js";

const TOKEN_KEY = "strata.token";
let onChange = () => {};

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function refresh() {
  $("#forget-token").hidden = !getToken();
}

/** Wire the sign-in form; `changed` runs when a token is given or forgotten. */
export function initAuth(changed) {
  onChange = changed;
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("#token-input").value = "";
    hideAuth();
    onChange();
  });
  $("#forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    refresh();
    onChange();
  });
  refresh();
}

/** The service refused the request: ask for a (new) token. */
export function showAuth(detail) {
  const had = getToken();
  if (had) sessionStorage.removeItem(TOKEN_KEY);
  refresh();
  const panel = $("#auth");
  $("#auth-reason").textContent = had
    ? `The token was refused${detail ? ` (${detail})` : ""}. Enter another one.`
    : `This Strata service asks for an API token${detail ? ` (${detail})` : ""}.`;
  const wasHidden = panel.hidden;
  panel.hidden = false;
  $("#view").hidden = true;
  if (wasHidden) $("#token-input").focus();
}

function hideAuth() {
  $("#auth").hidden = true;
  $("#view").hidden = false;
  refresh();
}
