import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bootstrapRatio, median, percentile } from '../../bench/stats';

test('median and nearest-rank percentile', () => {
  assert.is(median([3, 1, 2]), 2);
  assert.is(median([4, 1, 3, 2]), 2.5);
  assert.is(percentile([5, 1, 4, 2, 3], 90), 5);
  assert.is(percentile([5, 1, 4, 2, 3], 50), 3);
  assert.ok(Number.isNaN(median([])));
});

test('bootstrapRatio: the interval of a ratio of medians', () => {
  const den = Array.from({ length: 100 }, (_, i) => 3 + i / 100);
  const num = den.map((x) => x * 1.2);
  const ci = bootstrapRatio(num, den);
  assert.ok(ci !== null);
  const [lo, hi] = ci!;
  assert.ok(lo < 1.2 && hi > 1.2, `${lo} .. ${hi} holds 1.2`);
  assert.ok(lo > 1.1 && hi < 1.3, `${lo} .. ${hi} is narrow for 100 samples each`);
  // the same samples give the same interval (fixed seed)
  assert.equal(bootstrapRatio(num, den), ci);
  // fewer samples, wider interval
  const [lo10, hi10] = bootstrapRatio(num.filter((_, i) => i % 10 === 0), den.filter((_, i) => i % 10 === 0))!;
  assert.ok(hi10 - lo10 > hi - lo, `${hi10 - lo10} > ${hi - lo}`);
  // no spread, no doubt
  assert.equal(bootstrapRatio([6, 6, 6], [5, 5]), [1.2, 1.2]);
  assert.is(bootstrapRatio([], [1]), null);
  assert.is(bootstrapRatio([1], []), null);
});

test.run();
