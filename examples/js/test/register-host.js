// `node --import ./test/register-host.js`: maps the component-only import
// `sparkhost:workload/host@0.1.0` to ./host-double.js, so the SDK and the
// workloads run under node.
import { register } from 'node:module';

register('./host-hooks.js', import.meta.url);
