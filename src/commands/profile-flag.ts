/**
 * `--profile NAME` as given on the command line (taken out of argv before commander parses it; see cli.ts). A module
 * of its own so that setting it loads nothing: context.ts brings the client side (profiles, the token store, the OIDC
 * client), which `hoopctl broker start` never uses and would keep resident.
 */
let profileFlag: string | undefined;

export function setProfileFlag(name: string | undefined): void {
  profileFlag = name;
}

export function profileFlagGiven(): string | undefined {
  return profileFlag;
}
