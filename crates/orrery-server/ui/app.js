// The console's shell: sign in and out, the caller's role (what the
// pages offer), and the hash router (#/page?query) that mounts one page
// at a time. Each page module exports render(main, ctx) and may return a
// function that stops its timers and streams when the page is left.

import { api, ApiError, clearToken, setToken, token } from './api.js';
import { h } from './dom.js';
import * as cluster from './cluster.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as gpus from './gpus.js';
import * as policies from './policies.js';
import * as vectors from './vectors.js';

const PAGES = { cluster, jobs, job, gpus, policies, policy: policies, vectors };
const $ = (id) => document.getElementById(id);

// What each permission of auth/perms.rs needs; a null role is the
// anonymous caller of an --insecure node, who may do everything.
const HOLDS = {
  read: ['admin', 'writer', 'reader'],
  write: ['admin', 'writer'],
  admin: ['admin'],
  'jobs.read': ['admin', 'writer', 'reader', 'worker'],
  'jobs.submit': ['admin', 'writer'],
};

let who = null;
let leave = null;
let generation = 0;

function ctx() {
  return {
    who,
    can: (perm) => who && (who.role === null || (HOLDS[perm] || []).includes(who.role)),
  };
}

function showSignIn(message) {
  who = null;
  generation += 1;
  if (leave) leave();
  leave = null;
  $('main').replaceChildren();
  $('shell').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('token').value = '';
  $('token').focus();
}

async function signIn(t) {
  setToken(t);
  try {
    who = await api('GET', '/v1/auth/whoami');
  } catch (e) {
    clearToken();
    const msg = e instanceof ApiError && e.status === 401
      ? 'Sign-in failed: the node does not accept this token.'
      : `Sign-in failed: ${e.message}`;
    showSignIn(msg);
    return false;
  }
  $('signin').hidden = true;
  $('shell').hidden = false;
  const role = who.role === null ? 'anonymous (insecure node)' : who.role;
  $('who').textContent = `${who.identity} · ${role}`;
  for (const a of document.querySelectorAll('nav a[data-needs]')) {
    a.parentElement.hidden = !ctx().can(a.dataset.needs);
  }
  return true;
}

function route() {
  if (!who) return;
  const hash = location.hash || '#/cluster';
  const m = hash.match(/^#\/([a-z]+)(?:\/([^?]*))?/);
  const name = m && PAGES[m[1]] ? m[1] : 'cluster';
  if (leave) leave();
  leave = null;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === name || (name === 'job' && a.dataset.page === 'jobs')
        || (name === 'policy' && a.dataset.page === 'policies')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = $('main');
  main.replaceChildren();
  const arg = m && m[2] ? decodeURIComponent(m[2]) : null;
  const page = PAGES[name];
  const c = { ...ctx(), arg, page: name };
  try {
    const r = page.render(main, c);
    const mine = ++generation;
    Promise.resolve(r).then((stop) => {
      if (typeof stop !== 'function') return;
      // Left already (a fast click on another page): stop it now.
      if (mine === generation && who) leave = stop;
      else stop();
    }).catch((e) => main.append(h('p.error', { role: 'alert' }, e.message)));
  } catch (e) {
    main.append(h('p.error', { role: 'alert' }, e.message));
  }
  main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
window.addEventListener('orrery:unauthorized', (e) => {
  clearToken();
  showSignIn(`Signed out: ${e.detail}`);
});

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const t = $('token').value.trim();
  if (!t) return;
  if (await signIn(t)) {
    // The console opens on the Cluster page.
    history.replaceState(null, '', '#/cluster');
    route();
  }
});

$('signout').addEventListener('click', () => {
  clearToken();
  history.replaceState(null, '', '#/cluster');
  showSignIn('');
});

(async () => {
  const t = token();
  if (t && (await signIn(t))) route();
  else if (!t) showSignIn('');
})();
