// Module resolution hook (see register-host.js).
const HOST = 'sparkhost:workload/host@0.1.0';

export async function resolve(specifier, context, nextResolve) {
  if (specifier === HOST) {
    return { url: new URL('./host-double.js', import.meta.url).href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
