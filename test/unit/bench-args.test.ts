/* The benchmarks' option helpers (test/bench/args.ts): integers and integer lists in a range, CPU
 * pinning, bad values refused with the option's name, and strict parsing of run.ts's options.
 */
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { intArg, intListArg, parseOptions, pinArg, pinOption, RUN_OPTIONS } from '../bench/args';

describe('intArg', () => {
  it('takes an integer from its text or a default', () => {
    expect(intArg('--count', '5000', { min: 10 })).toBe(5000);
    expect(intArg('--count', 1000)).toBe(1000);
    expect(intArg('--warmup', '0')).toBe(0);
  });

  it('refuses a non-integer or an out-of-range value, naming the option', () => {
    expect(() => intArg('--count', 'x', { min: 10, max: 100 })).toThrow('--count "x" is not an integer from 10 to 100');
    for (const bad of ['', '1.5', '-1', '1e3', '0x10']) expect(() => intArg('--count', bad)).toThrow(RangeError);
    expect(() => intArg('--count', '9', { min: 10 })).toThrow(/^--count "9" is not an integer from 10 to/);
    expect(() => intArg('--rounds', 51, { max: 50 })).toThrow('--rounds "51" is not an integer from 0 to 50');
  });
});

describe('intListArg', () => {
  it('splits a comma-separated list', () => {
    expect(intListArg('--sizes', '1,1000,10000', { min: 1 })).toEqual([1, 1000, 10000]);
    expect(intListArg('--sizes', '2000')).toEqual([2000]);
  });

  it('names the option and the bad element', () => {
    expect(() => intListArg('--sizes', '1,x', { min: 1, max: 100000 })).toThrow(
      '--sizes "1,x": "x" is not an integer from 1 to 100000',
    );
    expect(() => intListArg('--sizes', '', { min: 1 })).toThrow('--sizes "": "" is not an integer');
    expect(() => intListArg('--sizes', '1,,2')).toThrow(RangeError);
    expect(() => intListArg('--sizes', '0', { min: 1 })).toThrow('"0" is not an integer from 1');
  });
});

describe('pinArg and pinOption', () => {
  it('reads two CPUs or none', () => {
    expect(pinArg('--pin', '0,1')).toEqual([0, 1]);
    expect(pinArg('--pin', '3,2')).toEqual([3, 2]);
    expect(pinArg('--pin', 'none')).toBeUndefined();
  });

  it('refuses anything else, saying what it takes', () => {
    expect(() => pinArg('--pin', '0', { form: 'CLIENT_CPU,SERVER_CPU' })).toThrow(
      '--pin takes CLIENT_CPU,SERVER_CPU or none, got "0"',
    );
    for (const bad of ['0,1,2', 'a,b', '', '0;1']) expect(() => pinArg('--pin', bad)).toThrow(RangeError);
  });

  it('prefers --no-pin, then --pin, then the environment, then CPUs 0 and 1', () => {
    expect(pinOption({ 'no-pin': true }, { env: '2,3' })).toBeUndefined();
    expect(pinOption({ pin: '4,5' }, { env: '2,3' })).toEqual([4, 5]);
    expect(pinOption({ pin: 'none' }, { env: '2,3' })).toBeUndefined();
    expect(pinOption({}, { env: '2,3' })).toEqual([2, 3]);
    expect(pinOption({}, { env: '' })).toEqual(os.cpus().length >= 2 ? [0, 1] : undefined);
    expect(() => pinOption({}, { env: 'x' })).toThrow('--pin takes CPU,CPU or none, got "x"');
  });

  it('refuses --pin and --no-pin together', () => {
    expect(() => pinOption({ pin: '0,1', 'no-pin': true })).toThrow('--pin and --no-pin contradict each other');
  });
});

describe('parseOptions', () => {
  it("parses run.ts's options", () => {
    const v = parseOptions(['--quick', '--sizes', '1,1000', '--count=200', '--no-pin'], RUN_OPTIONS, __filename);
    expect({ ...v }).toEqual({ quick: true, sizes: '1,1000', count: '200', 'no-pin': true });
  });

  it('refuses unknown options, missing values, values of flags and bare arguments', () => {
    const parse = (argv: string[]) => () => parseOptions(argv, RUN_OPTIONS, __filename);
    expect(parse(['--bogus'])).toThrow("Unknown option '--bogus'");
    expect(parse(['--count'])).toThrow("Option '--count <value>' argument missing");
    expect(parse(['--quick=1'])).toThrow("Option '--quick' does not take an argument");
    expect(parse(['5000'])).toThrow("Unexpected argument '5000'");
    expect(parse(['--count', '--quick'])).toThrow("Option '--count' argument is ambiguous");
  });
});
