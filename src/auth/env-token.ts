/**
 * What to do about an expired or rejected `HOOPCTL_TOKEN`. `hoopctl login` would not help: the variable wins over
 * any stored login (a CI job must never run as someone else), so the hint names the variable.
 */
export const ENV_TOKEN_HINT =
  'refresh the token in HOOPCTL_TOKEN (e.g. HOOPCTL_TOKEN=$CI_OIDC_TOKEN from a new job token), or unset HOOPCTL_TOKEN to use your stored login';
