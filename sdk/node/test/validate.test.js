'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');

const { validate, summarize } = require('../src/index.js');
const { loadTable } = require('./table.js');

const { now, cases } = loadTable();

function sorted(triples) {
  return [...triples].sort((a, b) => (a.join('\u0000') < b.join('\u0000') ? -1 : 1));
}

test('the shared table has valid and invalid records', () => {
  assert.ok(cases.filter((c) => c.name.startsWith('valid/')).length >= 10);
  assert.ok(cases.filter((c) => c.name.startsWith('invalid/')).length >= 60);
});

for (const c of cases) {
  test(`table: ${c.name}`, () => {
    const got = validate(c.record, { nowUnixNano: now }).map((v) => [v.field, v.rule, v.message]);
    assert.deepEqual(sorted(got), sorted(c.violations));
  });
}

test('summarize names the first violations', () => {
  const violations = validate({ attributes: { 'audit.action': 'X' }, timeUnixNano: now }, { nowUnixNano: now });
  const text = summarize(violations, 2);
  assert.ok(text.startsWith("audit.action: 'X' does not match"), text);
  assert.ok(text.endsWith(`(+${violations.length - 2} more)`), text);
});

test('a cyclic value is reported, not thrown', () => {
  const loop = [];
  loop.push(loop);
  const base = cases.find((c) => c.name === 'valid/minimal-data-change').record;
  const record = { ...base, attributes: { ...base.attributes, loop } };
  const got = validate(record, { nowUnixNano: now }).map((v) => [v.field, v.rule]);
  assert.deepEqual(got, [['loop', 'max_depth']]);
});

test('hostile inputs never throw', () => {
  for (const record of [null, undefined, 5, 'x', { attributes: null }, { attributes: [] }]) {
    assert.ok(Array.isArray(validate(record)));
  }
});

test('a resource with violations reports them on every event; a valid one stays valid', () => {
  const base = cases.find((c) => c.name === 'valid/minimal-data-change').record;
  const broken = { 'service.name': '' };
  for (let i = 0; i < 2; i += 1) {
    const got = validate({ ...base, resource: broken }, { nowUnixNano: now });
    assert.deepEqual(got.map((v) => [v.field, v.rule]), [['resource.service.name', 'required']]);
  }
  const fine = { 'service.name': 'billing' };
  for (let i = 0; i < 2; i += 1) {
    assert.deepEqual(validate({ ...base, resource: fine }, { nowUnixNano: now }), []);
  }
});

test('a resource seen past the violation cap is checked in full next time', () => {
  const base = cases.find((c) => c.name === 'valid/minimal-data-change').record;
  const resource = { 'service.name': 'billing', 'deep.value': ['fine', new Date()] };
  const noisy = { ...base.attributes };
  for (let i = 0; i < 60; i += 1) noisy[`bad..key${i}`] = 'x';
  validate({ ...base, attributes: noisy, resource }, { nowUnixNano: now });
  const got = validate({ ...base, resource }, { nowUnixNano: now });
  assert.deepEqual(got.map((v) => [v.field, v.rule]), [['resource.deep.value', 'type']]);
});
