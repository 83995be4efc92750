// jwt.ts's import of the contract's base64 (src/contract/base64.ts).
export { base64UrlToBytes } from '../../../src/contract/base64.ts';
