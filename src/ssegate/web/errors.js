// What each error code means to a person reading the chat page (CONTRACT §4), plus the few the page makes
// up itself when there is no server answer to show. No DOM.

const TEXT = {
  invalid_request: "The gateway could not accept this request.",
  payload_too_large: "Your message is too long for the gateway. Shorten it and try again.",
  unauthorized: "The gateway needs a valid API key. Set one under Settings.",
  not_found: "The gateway could not find what was asked for.",
  rate_limited: "Too many requests right now. Wait a moment, then try again.",
  upstream_error: "The model provider returned an error.",
  upstream_timeout: "The model took too long to answer.",
  overloaded: "The gateway is busy right now. Try again in a moment.",
  shutting_down: "The gateway is restarting. Try again in a moment.",
  generation_lost: "The answer was lost on the server before it finished.",
  model_not_found: "The gateway does not serve this model. Pick another one.",
  internal_error: "The gateway failed unexpectedly.",
  // made up by the page
  network_error: "Could not reach the gateway. Check your connection and try again.",
  connection_lost: "The connection dropped and the answer could not be resumed yet.",
  interrupted: "The page was reloaded before the answer started, so it could not be resumed.",
};

/**
 * @param {{code: string, message?: string}} error
 * @param {{resume?: boolean, retryAfter?: number}} [context]
 * @returns {{title: string, detail: string}} a sentence for people, and the server's own words
 */
export function describeError(error, { resume = false, retryAfter } = {}) {
  const code = error && error.code ? String(error.code) : "unknown";
  let title = TEXT[code] || `Something went wrong (${code}).`;
  if (resume && code === "not_found") {
    title = "This answer is no longer on the server, so it cannot be resumed.";
  }
  if (retryAfter !== undefined && retryAfter > 0 && (code === "rate_limited" || code === "overloaded" || code === "shutting_down")) {
    title += ` (suggested wait: ${Math.ceil(retryAfter)} s)`;
  }
  const detail = error && error.message ? String(error.message) : "";
  return { title, detail };
}
