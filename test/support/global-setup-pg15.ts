import { makeGlobalSetup } from './global-setup.js';

export default makeGlobalSetup(15);
