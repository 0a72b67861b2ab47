// The admin page: everything goes through the REST API with the token kept in this tab's
// session storage. Documents in backups are written by anyone who could write an event, so
// every value from the API is rendered as text (textContent, DOM nodes), never as HTML.
'use strict';

const TOKEN_KEY = 'eventvault.adminToken';

// ---- small DOM helpers ---------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element with properties and children (strings become text nodes). */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

/** A definition list from [term, value] pairs; a value may be a node. */
function facts(list, pairs) {
  clear(list);
  for (const [term, value] of pairs) {
    list.append(el('dt', {}, term), el('dd', {}, value === null || value === undefined ? '—' : value));
  }
}

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

function list(text) {
  return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

function countsText(counts) {
  if (!counts) return '—';
  const records = counts.records || {};
  const total = Object.values(records).reduce((a, b) => a + Number(b || 0), 0);
  const parts = [counts.events + ' event' + (counts.events === 1 ? '' : 's'), total + ' record' + (total === 1 ? '' : 's')];
  if (counts.busMessages !== undefined && counts.busMessages !== null) parts.push(counts.busMessages + ' messages');
  return parts.join(', ');
}

// ---- notices -------------------------------------------------------------------------------

function notify(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
  $('notice-text').textContent = '';
}

// ---- the token and the API -----------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function showTokenState() {
  const has = token() !== '';
  $('token-state').textContent = has ? 'token set for this tab' : '';
  $('forget-token').hidden = !has;
}

function askToken(reason) {
  $('token-reason').textContent = reason;
  $('token-card').hidden = false;
  $('token-input').focus();
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; a non-2xx answer throws with the API's own message. */
async function api(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = 'Bearer ' + token();
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server did not answer (' + e.message + ').');
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const message = error.message || response.status + ' ' + response.statusText;
    if (response.status === 401 || response.status === 403) askToken(message);
    throw new ApiError(response.status, error.code || 'http_' + response.status, message);
  }
  return data;
}

/** Shows an error where the user acted (and in the notice bar). */
function fail(where, error) {
  const text = error instanceof ApiError ? error.message : String(error);
  // The token card already shows an auth failure and asks again.
  const auth = error instanceof ApiError && (error.status === 401 || error.status === 403);
  if (where) {
    where.textContent = 'Error: ' + text;
    where.className = 'result error';
  }
  if (!auth) notify(text);
}

function succeed(where, text) {
  where.textContent = text;
  where.className = 'result ok';
}

/**
 * Runs a long call with its button disabled and an elapsed-seconds counter beside it; the
 * rest of the page stays usable. Afterwards the status, the list and the audit are reloaded.
 */
async function longOp(button, progress, work) {
  const started = Date.now();
  button.disabled = true;
  progress.classList.add('busy');
  const tick = () => {
    progress.textContent = 'working… ' + Math.floor((Date.now() - started) / 1000) + ' s';
  };
  tick();
  const timer = setInterval(tick, 1000);
  try {
    return await work();
  } finally {
    clearInterval(timer);
    button.disabled = false;
    progress.classList.remove('busy');
    progress.textContent = '';
    refreshAll();
  }
}

// ---- status --------------------------------------------------------------------------------

async function loadStatus() {
  let health;
  try {
    health = await api('GET', '/api/health');
  } catch (e) {
    $('health-status').textContent = 'unreachable';
    $('health-status').className = 'badge bad';
    fail(null, e);
    return;
  }
  const badge = $('health-status');
  badge.textContent = health.status;
  badge.className = 'badge ' + (health.status === 'ok' ? 'good' : 'bad');
  $('health-version').textContent = 'v' + health.version + ', up ' + health.uptimeSeconds + ' s';

  const store = health.store || {};
  const backup = health.backup || {};
  const pairs = [
    ['Store', store.open ? store.events + (store.events === 1 ? ' event, ' : ' events, ') + bytes(store.sizeBytes) + ', last seq ' + store.lastSeq : 'closed'],
    ['Free space', bytes(store.freeBytes) + (store.lowSpace ? ' (low!)' : '')],
  ];
  if (backup.available === false) {
    pairs.push(['Local backups', 'unavailable']);
  } else {
    const latest = backup.latest ? backup.latest.name + ' (' + when(backup.latest.created) + ')' : 'none yet';
    pairs.push(['Local backups', (backup.count || 0) + ' (' + (backup.totalSizeMB || '0') + ' MB)']);
    pairs.push(['Latest', latest]);
    pairs.push(['Next scheduled', backup.autoBackup === false ? 'off' : when(backup.nextScheduled)]);
    if (backup.running) pairs.push(['Running', typeof backup.running === 'string' ? backup.running : JSON.stringify(backup.running)]);
    // A restore answers before the backup of the data it replaced is written; until then
    // another backup or restore is refused as busy.
    if (Array.isArray(backup.undoPending) && backup.undoPending.length) pairs.push(['Being written', backup.undoPending.join(', ')]);
    pairs.push(['Last backup error', backup.lastError || 'none']);
  }
  const repo = backup.repo;
  if (repo) {
    const last = repo.lastBackup ? repo.lastBackup.id + ' (' + when(repo.lastBackup.at) + ')' : 'none yet';
    pairs.push(['Repository', repo.url + ': ' + (repo.backups ?? 0) + ' backups, ' + bytes(repo.sizeBytes ?? 0) + (repo.encrypted ? ', encrypted' : '')]);
    pairs.push(['Latest in repository', last]);
    if (repo.lastError) pairs.push(['Repository error', repo.lastError]);
  } else {
    pairs.push(['Repository', 'none (BACKUP_REPO not set)']);
  }
  const ship = health.ship;
  if (ship) {
    const lag = ship.lagSeconds === null || ship.lagSeconds === undefined ? '—' : ship.lagSeconds + ' s';
    pairs.push(['Ship lag', lag + ' (shipped ' + ship.lastShippedSeq + ' of ' + ship.lastSeq + ')' + (ship.lastError ? ', error: ' + ship.lastError : '')]);
  } else {
    pairs.push(['Ship lag', 'not shipping']);
  }
  pairs.push(['Last drill', drillText(health.lastDrill)]);
  facts($('status-list'), pairs);

  // Point-in-time restore needs the repository and shipping.
  const pitr = Boolean(repo && ship);
  $('pitr-unavailable').hidden = pitr;
  $('pitr-form').hidden = !pitr;
}

function drillText(drill) {
  if (!drill) return 'no drill yet';
  let text = drill.outcome + ' at ' + when(drill.at);
  if (drill.restoreSeconds !== undefined && drill.restoreSeconds !== null) text += ', restore ' + drill.restoreSeconds + ' s';
  if (Array.isArray(drill.backups) && drill.backups.length) text += ', ' + drill.backups.join(', ');
  if (drill.error) text += ', error: ' + drill.error;
  return text;
}

// ---- backups -------------------------------------------------------------------------------

async function loadBackups() {
  let items;
  try {
    items = await api('GET', '/api/backups');
  } catch (e) {
    fail(null, e);
    return;
  }
  const body = clear($('backups-table').tBodies[0]);
  $('backups-empty').hidden = items.length > 0;
  for (const item of items) {
    const location = item.location || 'local';
    // The buttons sit under the name, so a phone reaches them without scrolling the table.
    const actions = el('div', { class: 'actions' });
    // Browsing reads archives in BACKUP_DIR; a repository-only backup is restored, not browsed.
    if (location === 'local') {
      actions.append(el('button', { type: 'button', class: 'small', onclick: () => openBrowse(item.id) }, 'Browse'));
    }
    actions.append(el('button', { type: 'button', class: 'small', onclick: () => openRestore(item) }, 'Restore…'));
    const name = el('td', {}, el('span', { class: 'mono' }, item.id));
    if (item.label) name.append(el('br'), el('span', { class: 'label' }, item.label));
    if (item.eventName) name.append(el('br'), el('span', { class: 'muted' }, 'event: ' + item.eventName));
    name.append(actions);
    body.append(el('tr', { dataset: { id: item.id, location } },
      name,
      el('td', {}, item.kind),
      el('td', {}, location === 'repo' ? 'repository' : 'local'),
      el('td', { class: 'num' }, bytes(item.size)),
      el('td', { title: item.created }, when(item.created)),
      el('td', {}, item.trigger || '—'),
      el('td', {}, item.keep ? 'yes' : 'no'),
      el('td', {}, countsText(item.counts))));
  }
}

$('backup-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const result = $('backup-result');
  result.textContent = '';
  const body = { keep: $('backup-keep').checked };
  const label = $('backup-label').value.trim();
  if (label) body.label = label;
  longOp($('backup-button'), $('backup-progress'), async () => {
    try {
      const created = await api('POST', '/api/backup/create', body);
      let text = 'Backup ' + created.name + ' written (' + bytes(created.size) + ', ' + countsText(created.counts) + ')';
      if (created.repo) text += ' and sent to the repository';
      succeed(result, text + '.');
      $('backup-label').value = '';
    } catch (e) {
      fail(result, e);
    }
  });
});

// ---- backup, then purge --------------------------------------------------------------------

let pendingPurge = null;

$('purge-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const collections = list($('purge-collections').value);
  const eventIds = list($('purge-events').value);
  if (collections.length === 0) {
    fail($('purge-result'), 'Name at least one collection to purge.');
    return;
  }
  pendingPurge = { collections };
  if (eventIds.length) pendingPurge.eventIds = eventIds;
  const what = clear($('purge-what'));
  const scope = eventIds.length ? 'in event' + (eventIds.length > 1 ? 's ' : ' ') + eventIds.join(', ') : 'in every event';
  for (const name of collections) what.append(el('li', {}, 'every record of collection “' + name + '” ' + scope));
  $('purge-dialog').showModal();
});

$('purge-cancel').addEventListener('click', () => {
  pendingPurge = null;
  $('purge-dialog').close();
});

$('purge-confirm').addEventListener('click', () => {
  $('purge-dialog').close();
  const purge = pendingPurge;
  pendingPurge = null;
  if (!purge) return;
  const body = { purge };
  const label = $('purge-label').value.trim();
  if (label) body.label = label;
  const result = $('purge-result');
  result.textContent = '';
  longOp($('purge-button'), $('purge-progress'), async () => {
    try {
      const done = await api('POST', '/api/backup/create', body);
      const per = (done.purged || []).map((p) => p.collection + ' of ' + p.eventId + ': ' + p.count);
      let text = 'Backup ' + done.name + ' written and verified; ' + done.purgedTotal + ' record' + (done.purgedTotal === 1 ? '' : 's') + ' deleted';
      if (per.length) text += ' (' + per.join('; ') + ')';
      if (done.keptChanged) text += '; ' + done.keptChanged + ' changed since the backup were kept';
      succeed(result, text + '.');
    } catch (e) {
      fail(result, e);
    }
  });
});

// ---- browsing ------------------------------------------------------------------------------

// `ticket` drops a page's answer once another page was asked for; `next` is cleared while a
// page loads, so a second click on Next does not skip ahead with the same cursor.
const browse = { id: null, collection: null, cursors: [null], page: 0, next: null, ticket: 0 };

async function openBrowse(id) {
  browse.id = id;
  browse.collection = null;
  $('browse-card').hidden = false;
  $('browse-id').textContent = id;
  $('browse-form').hidden = true;
  $('browse-pager').hidden = true;
  clear($('browse-docs'));
  $('browse-summary').textContent = 'Loading the collections…';
  const chips = clear($('browse-collections'));
  $('browse-card').scrollIntoView({ block: 'start' });
  try {
    const collections = await api('GET', '/api/backups/' + encodeURIComponent(id) + '/collections');
    $('browse-summary').textContent = collections.length ? 'Pick a collection.' : 'This backup holds no collections.';
    for (const c of collections) {
      chips.append(el('button', {
        type: 'button',
        class: 'chip',
        dataset: { collection: c.collection },
        onclick: () => pickCollection(c.collection),
      }, c.collection + ' (' + c.documentCount + ')'));
    }
  } catch (e) {
    fail($('browse-summary'), e);
  }
}

function pickCollection(name) {
  browse.collection = name;
  for (const chip of $('browse-collections').children) chip.classList.toggle('active', chip.dataset.collection === name);
  $('browse-form').hidden = false;
  $('browse-q').value = '';
  $('browse-event').value = '';
  resetPaging();
  loadDocuments();
}

function resetPaging() {
  browse.cursors = [null];
  browse.page = 0;
}

async function loadDocuments() {
  const params = new URLSearchParams({ limit: $('browse-limit').value });
  const q = $('browse-q').value.trim();
  const eventId = $('browse-event').value.trim();
  if (q) params.set('q', q);
  if (eventId) params.set('eventId', eventId);
  const cursor = browse.cursors[browse.page];
  if (cursor) params.set('cursor', cursor);
  const path = '/api/backups/' + encodeURIComponent(browse.id) + '/collections/' + encodeURIComponent(browse.collection) + '?' + params;
  const docs = clear($('browse-docs'));
  $('browse-summary').textContent = 'Loading…';
  const ticket = ++browse.ticket;
  browse.next = null;
  $('browse-next').disabled = true;
  $('browse-prev').disabled = true;
  try {
    const page = await api('GET', path);
    if (ticket !== browse.ticket) return;
    browse.next = page.nextCursor;
    const first = browse.page * Number($('browse-limit').value);
    $('browse-summary').textContent = page.total + ' matching document' + (page.total === 1 ? '' : 's') + ' in ' + browse.collection +
      (page.documents.length ? ', showing ' + (first + 1) + '–' + (first + page.documents.length) : '');
    docs.start = first + 1;
    for (const doc of page.documents) docs.append(el('li', {}, el('pre', {}, JSON.stringify(doc, null, 2))));
    $('browse-pager').hidden = !(browse.page > 0 || page.nextCursor);
    $('browse-prev').disabled = browse.page === 0;
    $('browse-next').disabled = !page.nextCursor;
    $('browse-page').textContent = 'page ' + (browse.page + 1);
  } catch (e) {
    if (ticket !== browse.ticket) return;
    $('browse-prev').disabled = browse.page === 0;
    fail($('browse-summary'), e);
  }
}

$('browse-form').addEventListener('submit', (event) => {
  event.preventDefault();
  resetPaging();
  loadDocuments();
});
$('browse-limit').addEventListener('change', () => {
  resetPaging();
  loadDocuments();
});
$('browse-next').addEventListener('click', () => {
  if (!browse.next) return;
  browse.cursors[browse.page + 1] = browse.next;
  browse.page += 1;
  loadDocuments();
});
$('browse-prev').addEventListener('click', () => {
  if (browse.page === 0) return;
  browse.page -= 1;
  loadDocuments();
});
$('browse-close').addEventListener('click', () => {
  $('browse-card').hidden = true;
});

// ---- restore with a dry run first ----------------------------------------------------------

// `previewed` is what the dry run on screen was for, the backup and the options together: the
// confirm button restores exactly that. `ticket` grows with every change (another backup,
// another option, a new dry run), so a dry run's answer that arrives after one is dropped
// instead of arming the confirm button for what is no longer selected.
const restore = { item: null, previewed: null, ticket: 0 };

function openRestore(item) {
  restore.item = item;
  restore.previewed = null;
  restore.ticket += 1;
  $('restore-card').hidden = false;
  $('restore-id').textContent = item.id + (item.location === 'repo' ? ' (repository)' : '');
  $('restore-preview').hidden = true;
  $('restore-result').textContent = '';
  for (const id of ['restore-collections', 'restore-events', 'restore-new-id']) $(id).value = '';
  $('restore-skip').checked = true;
  $('restore-card').scrollIntoView({ block: 'start' });
}

function restoreOptions() {
  const options = {};
  const collections = list($('restore-collections').value);
  const eventIds = list($('restore-events').value);
  const newEventId = $('restore-new-id').value.trim();
  if (collections.length) options.specificCollections = collections;
  if (eventIds.length) options.eventIds = eventIds;
  if (newEventId) options.newEventId = newEventId;
  if (!$('restore-skip').checked) options.skipExistingRecords = false;
  return options;
}

// Changing an option after a dry run asks for a new dry run before the real restore.
for (const id of ['restore-collections', 'restore-events', 'restore-new-id', 'restore-skip']) {
  $(id).addEventListener('input', () => {
    $('restore-preview').hidden = true;
    restore.previewed = null;
    restore.ticket += 1;
  });
}

function reportPairs(report) {
  const pairs = [
    ['Backup', report.backupId + ' (' + report.kind + ')'],
    ['Mode', report.mode === 'swap' ? 'swap: the whole store is replaced' : 'merge: records are merged into the live store'],
  ];
  if (report.mode === 'swap') pairs.push(['Live data becomes', countsText(report.replacedWith)]);
  const t = report.totals || {};
  if (report.mode !== 'swap') pairs.push(['Records', (t.created || 0) + ' created, ' + (t.overwritten || 0) + ' overwritten, ' + (t.skipped || 0) + ' skipped']);
  if (report.warnings && report.warnings.length) pairs.push(['Warnings', report.warnings.join('; ')]);
  return pairs;
}

$('restore-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const item = restore.item;
  const options = restoreOptions();
  const ticket = ++restore.ticket;
  restore.previewed = null;
  $('restore-preview').hidden = true;
  $('restore-result').textContent = '';
  longOp($('restore-dry'), $('restore-progress'), async () => {
    try {
      const report = await api('POST', '/api/backups/' + encodeURIComponent(item.id) + '/restore', { ...options, dryRun: true });
      if (ticket !== restore.ticket) return;
      facts($('restore-report'), reportPairs(report));
      const rows = clear($('restore-events-table').tBodies[0]);
      for (const e of report.events || []) {
        const names = Object.keys(e.collections || {});
        if (names.length === 0) names.push(null);
        for (const name of names) {
          const c = name ? e.collections[name] : {};
          rows.append(el('tr', {},
            el('td', { class: 'mono' }, e.eventId + (e.sourceEventId && e.sourceEventId !== e.eventId ? ' ← ' + e.sourceEventId : '')),
            el('td', {}, e.event + (e.eventExists ? ' (exists)' : '')),
            el('td', {}, name || '—'),
            el('td', { class: 'num' }, c.created ?? '—'),
            el('td', { class: 'num' }, c.overwritten ?? '—'),
            el('td', { class: 'num' }, c.skipped ?? '—')));
        }
      }
      $('restore-events-table').hidden = !(report.events && report.events.length);
      $('restore-confirm-text').textContent = report.mode === 'swap'
        ? 'Restoring replaces all live data with ' + report.backupId + '. The current data is kept as a pre-restore backup.'
        : 'Restoring writes the records above into the live store.';
      restore.previewed = { item, options };
      $('restore-preview').hidden = false;
    } catch (e) {
      if (ticket !== restore.ticket) return;
      fail($('restore-result'), e);
    }
  });
});

$('restore-confirm').addEventListener('click', () => {
  if (!restore.previewed) return;
  const { item, options } = restore.previewed;
  $('restore-preview').hidden = true;
  restore.previewed = null;
  restore.ticket += 1;
  const result = $('restore-result');
  longOp($('restore-confirm'), $('restore-progress'), async () => {
    try {
      const report = await api('POST', '/api/backups/' + encodeURIComponent(item.id) + '/restore', options);
      const t = report.totals || {};
      let text = 'Restore of ' + report.backupId + ' complete: ';
      text += report.mode === 'swap'
        ? 'the store now holds ' + countsText(report.replacedWith)
        : (t.created || 0) + ' created, ' + (t.overwritten || 0) + ' overwritten, ' + (t.skipped || 0) + ' skipped';
      if (report.preRestoreBackup) text += '; the previous data is in ' + report.preRestoreBackup;
      succeed(result, text + '.');
    } catch (e) {
      fail(result, e);
    }
  });
});
$('restore-cancel').addEventListener('click', () => {
  $('restore-preview').hidden = true;
  restore.previewed = null;
  restore.ticket += 1;
});
$('restore-close').addEventListener('click', () => {
  $('restore-card').hidden = true;
});

// ---- point in time -------------------------------------------------------------------------

const pitr = { at: null, ticket: 0 };

/** The picker's local date-time as RFC 3339 in UTC. */
function pickedInstant() {
  const value = $('pitr-at').value;
  if (!value) return null;
  const date = new Date(value); // a date-time without offset is local time
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function localNow() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' + pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
}

$('pitr-at').addEventListener('input', () => {
  const at = pickedInstant();
  $('pitr-utc').textContent = at ? 'UTC: ' + at : '';
  $('pitr-preview').hidden = true;
  pitr.at = null;
  pitr.ticket += 1;
});

$('pitr-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const at = pickedInstant();
  const result = $('pitr-result');
  result.textContent = '';
  if (!at) {
    fail(result, 'Pick a date and time.');
    return;
  }
  $('pitr-utc').textContent = 'UTC: ' + at;
  const ticket = ++pitr.ticket;
  pitr.at = null;
  $('pitr-preview').hidden = true;
  longOp($('pitr-dry'), $('pitr-progress'), async () => {
    try {
      const r = await api('POST', '/api/backup/restore', { at, dryRun: true });
      // A dry run of another time, or a changed picker, since: this answer is not on screen.
      if (ticket !== pitr.ticket) return;
      facts($('pitr-report'), [
        ['Target', at],
        ['Starts from backup', r.backup + ' (' + when(r.backupCreatedAt) + ', seq ' + r.backupLastSeq + ')'],
        ['Replays', r.writesReplayed + ' writes, ' + r.messagesReplayed + ' messages from ' + r.segmentsRead + ' segments'],
        ['Covering', r.replayedFrom ? when(r.replayedFrom) + ' – ' + when(r.replayedTo) : 'nothing after the backup'],
        ['Store ends at seq', r.lastSeq],
      ]);
      $('pitr-confirm-text').textContent = 'Restoring replaces all live data with the store as it was at ' + new Date(at).toLocaleString() +
        '. The current data is kept as a pre-restore backup; a new timeline starts.';
      pitr.at = at;
      $('pitr-preview').hidden = false;
    } catch (e) {
      fail(result, e);
    }
  });
});

$('pitr-confirm').addEventListener('click', () => {
  const at = pitr.at;
  if (!at) return;
  pitr.at = null;
  $('pitr-preview').hidden = true;
  const result = $('pitr-result');
  longOp($('pitr-confirm'), $('pitr-progress'), async () => {
    try {
      const r = await api('POST', '/api/backup/restore', { at });
      let text = 'Restored to ' + at + ': seq ' + r.lastSeq + ', new timeline ' + r.newTimeline;
      if (r.preRestoreBackup) text += '; the previous data is in ' + r.preRestoreBackup;
      succeed(result, text + '.');
    } catch (e) {
      fail(result, e);
    }
  });
});
$('pitr-cancel').addEventListener('click', () => {
  $('pitr-preview').hidden = true;
  pitr.at = null;
});

// ---- audit ---------------------------------------------------------------------------------

async function loadAudit() {
  let answer;
  try {
    answer = await api('GET', '/api/backup/history?limit=' + encodeURIComponent($('audit-limit').value));
  } catch (e) {
    fail(null, e);
    return;
  }
  const body = clear($('audit-table').tBodies[0]);
  for (const entry of answer.entries) {
    body.append(el('tr', { class: 'status-' + entry.status },
      el('td', { title: entry.time }, when(entry.time)),
      el('td', {}, entry.action + (entry.options && entry.options.dryRun ? ' (dry run)' : '')),
      el('td', {}, entry.kind),
      el('td', { class: 'mono' }, entry.target),
      el('td', {}, entry.status),
      el('td', {}, entry.actor),
      el('td', { class: 'num' }, entry.durationMs === null || entry.durationMs === undefined ? '—' : entry.durationMs + ' ms'),
      el('td', {}, entry.error || '')));
  }
}

// ---- start ---------------------------------------------------------------------------------

let refreshing = null;

function refreshAll() {
  // One refresh at a time; a request while one runs is folded into it.
  if (!refreshing) {
    refreshing = Promise.all([loadStatus(), loadBackups(), loadAudit()]).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token-input').value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $('token-input').value = '';
  $('token-card').hidden = true;
  $('token-reason').textContent = '';
  clearNotice();
  showTokenState();
  refreshAll();
});

$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
  clear($('backups-table').tBodies[0]);
  clear($('audit-table').tBodies[0]);
  refreshAll();
});

$('notice-close').addEventListener('click', clearNotice);
$('refresh-status').addEventListener('click', loadStatus);
$('refresh-backups').addEventListener('click', loadBackups);
$('refresh-audit').addEventListener('click', loadAudit);
$('audit-limit').addEventListener('change', loadAudit);

$('pitr-at').value = localNow();
$('pitr-utc').textContent = 'UTC: ' + pickedInstant();
showTokenState();
refreshAll();
// The status follows the server while the page is open.
setInterval(() => {
  if (!document.hidden && $('token-card').hidden) loadStatus();
}, 15000);
