export * from './arithmetic.js';
export * from './reduce.js';
export * from './shape.js';
export * from './matmul.js';
export * from './gather.js';
export * from './nn.js';
export * from './loss.js';
export { cast } from './cast.js';
