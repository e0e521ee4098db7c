// Unit tests of the extension's pure logic (tags, states, literals, layout): no browser,
// no JupyterLab; the browser tests in tests/ui cover the widgets.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/labextension/src'],
  testRegex: '__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      { tsconfig: { module: 'commonjs', esModuleInterop: true, types: ['jest'] } }
    ]
  }
};
